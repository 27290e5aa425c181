"""Developer tooling: the local stack, provisioning from template.yaml, demo data, the CLI."""
