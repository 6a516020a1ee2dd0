"""Prefect tasks: thin wrappers over the use cases of customs.services, adding what Prefect gives a step
(retries on database hiccups, time-outs, logs and task runs in the UI). No rule and no SQL lives here."""
