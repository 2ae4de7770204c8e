"""Tests of the mail_queue plugin."""
