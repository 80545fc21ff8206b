"""Built-in method and post-processor plugins (imported as ``harness.methods``)."""
