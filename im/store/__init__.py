"""SQL, one module per feature. Nothing else in the code base writes SQL."""
