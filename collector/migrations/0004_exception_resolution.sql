-- Who resolved an exception by hand (the web UI's resolve action); empty when the collector
-- resolved it itself because the cause went away.
ALTER TABLE exceptions ADD COLUMN resolved_by TEXT NOT NULL DEFAULT '';
