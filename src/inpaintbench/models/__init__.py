"""Model registry and implementations; see base.py for the contract."""
