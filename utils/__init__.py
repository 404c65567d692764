"""Hand-detection toolkit: small, tested building blocks behind the top-level scripts."""
