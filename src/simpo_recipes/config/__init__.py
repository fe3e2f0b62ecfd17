"""Configuration: typed dataclasses for every stage and the strict YAML / command-line parser."""
