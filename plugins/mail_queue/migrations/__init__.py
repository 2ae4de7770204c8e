"""Migrations of the mail_queue plugin."""
