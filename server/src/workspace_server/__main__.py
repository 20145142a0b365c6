from workspace_server.cli import app

app()
