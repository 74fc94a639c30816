"""Drop-in request tracking for web frameworks: one module per framework, one shared core.

Importing ``monitor_worker`` imports none of these; each imports only its own framework.
"""
