-- An email's context (its few KB of JSON) in a table of its own: written once when the email is
-- queued, read once when it is claimed. The outbox row changes state three times (queued →
-- sending → sent); with the context inside, a row filled a page, so each change wrote a whole
-- page to the WAL and again at checkpoint. Without it, dozens of rows share a page.
CREATE TABLE outbox_context(id INTEGER PRIMARY KEY, context TEXT NOT NULL);
INSERT INTO outbox_context(id, context) SELECT id, context FROM outbox;
ALTER TABLE outbox DROP COLUMN context;
-- Whatever deletes an email (retention) deletes its context with it.
CREATE TRIGGER outbox_context_deleted AFTER DELETE ON outbox BEGIN
  DELETE FROM outbox_context WHERE id = old.id;
END;
-- Whole emails, as `SELECT … FROM outbox` gives them in PostgreSQL (Dialect.emails).
CREATE VIEW outbox_emails AS SELECT outbox.*, outbox_context.context FROM outbox JOIN outbox_context USING (id);
