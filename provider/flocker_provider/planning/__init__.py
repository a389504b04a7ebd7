"""Values and planning: immutable models of desired and discovered state, the steps of a plan, and the pure planner."""
