"""tritonforge.loadtest."""
