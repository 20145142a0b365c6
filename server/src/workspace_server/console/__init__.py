"""The web console at /ui: static pages that use the REST API with a session cookie."""
