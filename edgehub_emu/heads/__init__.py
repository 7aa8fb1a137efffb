"""Protocol heads: each translates its wire's events into calls on the core (a device listener per
authenticated client) and implements the core's device proxy for its clients."""
