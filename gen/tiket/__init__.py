"""Code generated from protos/tiket by `make proto` (libs/proto/generate.py). Never edit it."""
