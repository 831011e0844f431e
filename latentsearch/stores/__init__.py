"""The SQL store: the single source of truth for items, their vectors and every change."""
