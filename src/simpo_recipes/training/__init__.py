"""Training: log-probs (chunked head, packing), the collator, the trainers and what runs around them."""
