"""Getting a guest to its first instruction: CPU modes, page tables, kernel loaders."""
