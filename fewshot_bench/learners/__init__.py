"""Built-in learners: registered through entry points like any plugin, importing only the plugin API."""
