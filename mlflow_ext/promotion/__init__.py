"""Promotion: gates, audit tags, rollback and deployment reports (docs/promotion.md)."""
