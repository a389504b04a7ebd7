"""The engine behind flocker-pulumi: models, planner, Docker layer and dynamic providers."""
