"""Who is calling and how that is proven: principals and roles (principal.py), asymmetric
JWT bearer tokens (tokens.py), key sets (keys.py), a service's own identity
(service_identity.py) and the development keys (dev_keys.py)."""

from libs.auth.principal import (
    Principal,
    Role,
    check_subject,
    current_principal,
    set_principal,
)

__all__ = ["Principal", "Role", "check_subject", "current_principal", "set_principal"]
