"""The embedded demo: a generated, programmatically judged task, tiny models of each family, its evaluation."""
