"""Built-in metazoo plugins: one module per algorithm and per task suite.

They register through the same public hooks as a third-party plugin; the plugin manager
registers them by name from :data:`metazoo.manager.BUILTIN_PLUGINS`.
"""
