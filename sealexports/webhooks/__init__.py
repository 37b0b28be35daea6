"""Webhooks: endpoints per account, signed deliveries of export events, retried from the outbox."""
