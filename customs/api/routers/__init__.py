"""One router per resource: the service itself, declarations, officials' acts."""
