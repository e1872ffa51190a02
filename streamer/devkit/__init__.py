"""Development helpers: local stand-ins for the outside world (mail catcher, …)."""
