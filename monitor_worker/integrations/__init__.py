"""Integrations with the host app's frameworks: each module is imported only by the app that
uses it, so ``import monitor_worker`` never imports a framework."""
