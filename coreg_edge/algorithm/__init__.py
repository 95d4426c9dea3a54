"""The Co-Reg algorithm as pure tensor functions (no I/O)."""
