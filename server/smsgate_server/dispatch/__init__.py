"""From "accepted" to "sent": queue readers, retries, scheduling, receipts."""
