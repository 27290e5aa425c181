"""Gate passes (critical): signed, offline-verifiable tokens that let a driver into a yard."""
