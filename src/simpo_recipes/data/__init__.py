"""Data: loading and mixing datasets, chat-template tokenization, row checks."""
