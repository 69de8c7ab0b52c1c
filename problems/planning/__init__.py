"""Classical planning with evolved heuristics (Correa, Pereira, Seipp 2025) on IPC 2023 learning-track tasks."""
