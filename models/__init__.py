"""Tables, the declaration document schema and the state machine.

Nothing here imports from ``customs``, ``tasks`` or ``flows``.
"""
