"""xraylib."""
