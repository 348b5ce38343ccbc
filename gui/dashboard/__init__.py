"""The dashboard package: the run's nodes, charts, per-node view and log around Start and Stop."""

from gui.dashboard.widget import Dashboard

__all__ = ["Dashboard"]
