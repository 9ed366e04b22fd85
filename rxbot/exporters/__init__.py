"""Stats hooks that publish a run's counters to monitoring systems (optional extras)."""
