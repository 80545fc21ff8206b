"""Built-in dataset plugins (imported as ``harness.datasets``)."""
