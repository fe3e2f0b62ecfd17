"""Pipeline: recipes (ordered stages) and how they are launched."""
