"""The one training loop (Lightning) shared by every model the project trains."""
