"""The adults' answer: its films, its trunk, its read-out and its opacity map, fitted and measured."""
