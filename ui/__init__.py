"""The web app's own concerns, beside app.py: uploads it accepts and forgets, and its MCP tool's words."""
