export const PAGE_HTML = '<!doctype html><title>corematching</title>';
