"""REST clients of the services the platform talks to: GoCD's API and the auth app's admin API."""
