"""headscope."""
