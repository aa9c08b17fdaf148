"""Use cases of terminals and gates: each change one transaction with its event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.transaction import in_transaction, read
from libs.errors import found
from services.fare import domain, events, store
from services.fare.domain import Gate, GateStatus, GateType, Terminal, TerminalFields

SWEEP_BATCH = 500


class TerminalApp:
    def __init__(self, pool: AsyncConnectionPool, offline_after: timedelta) -> None:
        self.pool = pool
        # An online gate silent for longer than this is shown (and then marked) offline.
        self.offline_after = offline_after

    # --- terminals -------------------------------------------------------------------------

    async def create_terminal(self, code: str, fields: TerminalFields) -> Terminal:
        async def work(conn: AsyncConnection) -> Terminal:
            created = await store.insert_terminal(conn, code, fields)
            if created is None:  # the code exists: a retry, or another terminal
                existing = found(await store.terminal(conn, code), "terminal", code)
                return domain.same_terminal(existing, fields)
            await events.terminal_changed(conn, created, None)
            return created

        return await in_transaction(self.pool, work)

    async def get_terminal(self, code: str) -> Terminal:
        return found(await read(self.pool, store.terminal, code), "terminal", code)

    async def list_terminals(
        self, active_only: bool, after_code: str | None, limit: int
    ) -> list[Terminal]:
        return await read(self.pool, store.list_terminals, active_only, after_code, limit)

    async def update_terminal(
        self, code: str, wanted: TerminalFields, mask: Sequence[str]
    ) -> Terminal:
        async def work(conn: AsyncConnection) -> Terminal:
            current = found(await store.terminal(conn, code, lock=True), "terminal", code)
            fields, changed = domain.updated_fields(current, wanted, mask)
            if not changed:
                return current
            updated = await store.update_terminal(conn, code, fields)
            await events.terminal_changed(conn, updated, changed)
            return updated

        return await in_transaction(self.pool, work)

    # --- gates -----------------------------------------------------------------------------

    async def register_gate(self, terminal_code: str, gate_code: str, gate_type: GateType) -> Gate:
        async def work(conn: AsyncConnection) -> Gate:
            terminal = found(await store.terminal(conn, terminal_code), "terminal", terminal_code)
            created = await store.insert_gate(conn, terminal.id, gate_code, gate_type)
            gate = found(
                await self._gate(conn, terminal_code, gate_code),
                "gate",
                f"{terminal_code}/{gate_code}",
            )
            return gate if created else domain.same_gate(gate, gate_type)

        return await in_transaction(self.pool, work)

    async def list_gates(
        self,
        terminal_code: str | None,
        status: GateStatus | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Gate]:
        if terminal_code is not None:
            await self.get_terminal(terminal_code)  # NOT_FOUND rather than an empty list
        return await read(
            self.pool, store.list_gates, terminal_code, status, after, limit, self.offline_after
        )

    async def heartbeat(self, terminal_code: str, gate_code: str, status: GateStatus) -> Gate:
        """A gate in maintenance stays in it whatever it reports: only staff end it
        (ChangeGateStatus), else the gate's next routine ONLINE would take taps again."""
        return await self._set_status(terminal_code, gate_code, status, "heartbeat", True)

    async def change_gate_status(
        self, terminal_code: str, gate_code: str, status: GateStatus, reason: str
    ) -> Gate:
        return await self._set_status(terminal_code, gate_code, status, reason, False)

    async def _set_status(
        self, terminal_code: str, gate_code: str, status: GateStatus, reason: str, beat: bool
    ) -> Gate:
        async def work(conn: AsyncConnection) -> Gate:
            before = await self._gate(conn, terminal_code, gate_code, lock=True)
            before = found(before, "gate", f"{terminal_code}/{gate_code}")
            kept = beat and before.reported_status is GateStatus.MAINTENANCE
            new_status = GateStatus.MAINTENANCE if kept else status
            if not beat and before.reported_status is new_status:
                return before
            last_heartbeat, updated_at = await store.set_gate_status(
                conn, before.id, new_status, heartbeat=beat
            )
            after = replace(
                before,
                reported_status=new_status,
                last_heartbeat=last_heartbeat,
                updated_at=updated_at,
                stale=before.stale and not beat,
            )
            if after.status is not before.status:
                await events.gate_status_changed(
                    conn, after, before.status, after.status, reason, last_heartbeat
                )
            return after

        return await in_transaction(self.pool, work)

    async def mark_silent_gates_offline(self) -> int:
        """Mark one batch of online gates whose heartbeat stopped offline, each with its
        gate.status_changed; return how many. Safe on every replica at once (SKIP LOCKED)."""

        async def work(conn: AsyncConnection) -> int:
            silent = await store.mark_silent_gates_offline(conn, self.offline_after, SWEEP_BATCH)
            reason = f"no heartbeat for {self.offline_after.total_seconds():g} s"
            for gate in silent:
                await events.gate_status_changed(
                    conn, gate, GateStatus.ONLINE, GateStatus.OFFLINE, reason, gate.last_heartbeat
                )
            return len(silent)

        return await in_transaction(self.pool, work)

    async def _gate(
        self, conn: AsyncConnection, terminal_code: str, gate_code: str, *, lock: bool = False
    ) -> Gate | None:
        return await store.gate(conn, terminal_code, gate_code, self.offline_after, lock=lock)
