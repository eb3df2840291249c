"""Pure data contracts of salespulse: events, reps, dead letters, settings, the wire format."""
