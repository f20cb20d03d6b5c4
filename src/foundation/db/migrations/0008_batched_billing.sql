-- Batched billing: admissions are inserted many rows per statement, and the request id
-- on each hold lets the writer match the generated ids back to its requests (the order
-- of RETURNING rows is not guaranteed on either backend). Also links a hold to the
-- usage row that settles it, for investigations.
ALTER TABLE holds ADD COLUMN request_id TEXT;
