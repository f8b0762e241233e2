"""The catalog queries the reader runs: one per kind of object, for majors 15 to 18.

Every query reads user objects only: not pg_catalog, information_schema or
TOAST and temporary schemas, and (filtered by the reader) nothing an
extension owns. Names come back quoted by quote_ident, so DDL needs no
quoting of its own.
"""

from __future__ import annotations

# A user schema: what every query's namespace filter says.
USER_NS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
           "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'")


def acl(column: str, kind: str, owner: str) -> str:
    """Two arrays of 'grantee|privilege|grantable': the actual and the default privileges
    (both NULL when the object has its default privileges)."""
    def items(source: str) -> str:
        return (f"ARRAY(SELECT (CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE "
                f"quote_ident(pg_get_userbyid(a.grantee)) END) || '|' || a.privilege_type "
                f"|| '|' || a.is_grantable::text FROM aclexplode({source}) a ORDER BY 1)")
    default = f"acldefault({kind}, {owner})"
    # NULL means the defaults: nothing to explode (most objects, and the cost of most rows).
    return (f"CASE WHEN {column} IS NULL THEN NULL ELSE {items(column)} END, "
            f"CASE WHEN {column} IS NULL THEN NULL ELSE {items(default)} END")


EXTENSION_MEMBERS = "SELECT classid, objid FROM pg_depend WHERE deptype = 'e'"

SCHEMAS = f"""
SELECT n.oid, n.nspname, quote_ident(n.nspname), {acl('n.nspacl', "'n'", 'n.nspowner')}
FROM pg_namespace n WHERE {USER_NS}
"""

EXTENSIONS = """
SELECT e.oid, e.extname, quote_ident(e.extname), e.extversion, quote_ident(n.nspname),
       n.oid
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

ENUMS = f"""
SELECT t.oid, n.nspname, t.typname, quote_ident(n.nspname) || '.' || quote_ident(t.typname),
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
             ORDER BY e.enumsortorder),
       t.typarray, {acl('t.typacl', "'T'", 't.typowner')}
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'e' AND {USER_NS}
"""

DOMAINS = f"""
SELECT t.oid, n.nspname, t.typname, quote_ident(n.nspname) || '.' || quote_ident(t.typname),
       format_type(t.typbasetype, t.typtypmod),
       CASE WHEN t.typcollation <> 0 AND t.typcollation <> b.typcollation
            THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                  WHERE co.oid = t.typcollation) ELSE '' END,
       coalesce(t.typdefault, ''), t.typnotnull,
       ARRAY(SELECT c.conname::text || '|' || quote_ident(c.conname) || '|'
                    || pg_get_constraintdef(c.oid)
             FROM pg_constraint c WHERE c.contypid = t.oid AND c.contype = 'c'
             ORDER BY c.conname),
       ARRAY(SELECT c.oid FROM pg_constraint c WHERE c.contypid = t.oid),
       t.typarray, {acl('t.typacl', "'T'", 't.typowner')}
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     JOIN pg_type b ON b.oid = t.typbasetype
WHERE t.typtype = 'd' AND {USER_NS}
"""

COMPOSITES = f"""
SELECT t.oid, n.nspname, t.typname, quote_ident(n.nspname) || '.' || quote_ident(t.typname),
       t.typrelid, t.typarray,
       ARRAY(SELECT a.attname::text || '|' || quote_ident(a.attname) || '|'
                    || format_type(a.atttypid, a.atttypmod) || '|'
                    || CASE WHEN a.attcollation <> 0 AND a.attcollation <> at.typcollation
                       THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                             FROM pg_collation co
                             JOIN pg_namespace cn ON cn.oid = co.collnamespace
                             WHERE co.oid = a.attcollation) ELSE '' END
             FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum),
       {acl('t.typacl', "'T'", 't.typowner')}
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     JOIN pg_class c ON c.oid = t.typrelid
WHERE t.typtype = 'c' AND c.relkind = 'c' AND {USER_NS}
"""

_REL_ACL_KIND = "(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\""

# Tables, partitioned tables, views, materialized views and sequences. Identity
# sequences belong to their column (deptype 'i') and are read with it.
RELATIONS = f"""
SELECT c.oid, c.relkind::text, n.nspname, c.relname,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       c.relpersistence = 'u', c.relrowsecurity, c.relforcerowsecurity,
       coalesce(c.reloptions, '{{}}'::text[]),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) ELSE '' END,
       CASE WHEN c.relispartition THEN
         (SELECT quote_ident(pn.nspname) || '.' || quote_ident(p.relname)
          FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
          JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid)
       ELSE '' END,
       CASE WHEN c.relispartition THEN
         (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid) ELSE 0 END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) ELSE '' END,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) ELSE '' END,
       greatest(c.reltuples, 0)::bigint, c.relpages::bigint * current_setting('block_size')::int,
       c.reltype,
       {acl('c.relacl', _REL_ACL_KIND, 'c.relowner')}
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {USER_NS}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'i' AND c.relkind = 'S')
"""

SEQUENCES = """
SELECT s.seqrelid, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
       s.seqmax, s.seqcache, s.seqcycle
FROM pg_sequence s
"""

# Sequences owned by a column (serial, OWNED BY): deptype 'a' on the column.
SEQUENCE_OWNERS = """
SELECT d.objid, d.refobjid, d.refobjsubid
FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype = 'a' AND d.refobjsubid > 0
"""

COLUMNS = f"""
SELECT a.attrelid, a.attnum, a.attname, quote_ident(a.attname),
       format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                  WHERE co.oid = a.attcollation) ELSE '' END,
       a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), ''), coalesce(d.oid, 0),
       a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attacl IS NULL OR cardinality(a.attacl) = 0 THEN NULL ELSE
       ARRAY(SELECT (CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE
             quote_ident(pg_get_userbyid(x.grantee)) END) || '|' || x.privilege_type || '|'
             || x.is_grantable::text FROM aclexplode(a.attacl) x ORDER BY 1) END,
       a.attinhcount > 0
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_type t ON t.oid = a.atttypid
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm')
  AND {USER_NS}
ORDER BY a.attrelid, a.attnum
"""

# The sequences of identity columns (deptype 'i' on the column).
IDENTITIES = """
SELECT d.refobjid, d.refobjsubid, s.seqrelid,
       quote_ident(sn.nspname) || '.' || quote_ident(sc.relname),
       format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle
FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid
     JOIN pg_class sc ON sc.oid = s.seqrelid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype = 'i' AND d.refobjsubid > 0
"""

# Constraints of tables, except those a partition inherits from its parent.
CONSTRAINTS = f"""
SELECT k.oid, k.conrelid, k.conname, quote_ident(k.conname), k.contype::text,
       pg_get_constraintdef(k.oid), k.conindid
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype IN ('p', 'u', 'f', 'c', 'x') AND k.conislocal AND k.conparentid = 0
  AND {USER_NS}
"""

# Indexes, except those that back a constraint or are attached to a
# partitioned table's index (they come with the constraint or the partition).
INDEXES = f"""
SELECT i.indexrelid, i.indrelid, n.nspname, ic.relname,
       quote_ident(n.nspname) || '.' || quote_ident(ic.relname),
       CASE WHEN k.conindid IS NULL THEN pg_get_indexdef(i.indexrelid) ELSE '' END,
       k.conindid IS NOT NULL, h.inhrelid IS NOT NULL
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
     JOIN pg_namespace n ON n.oid = ic.relnamespace
     LEFT JOIN (SELECT DISTINCT conindid, conrelid FROM pg_constraint
                WHERE contype IN ('p', 'u', 'x')) k
          ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
     LEFT JOIN pg_inherits h ON h.inhrelid = i.indexrelid
WHERE {USER_NS}
"""

FUNCTIONS = f"""
SELECT p.oid, n.nspname, p.proname, quote_ident(n.nspname) || '.' || quote_ident(p.proname),
       p.prokind::text, pg_get_function_identity_arguments(p.oid),
       pg_get_function_arguments(p.oid), coalesce(pg_get_function_result(p.oid), ''),
       pg_get_functiondef(p.oid), {acl('p.proacl', "'f'", 'p.proowner')}
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p', 'w') AND {USER_NS}
"""

TRIGGERS = f"""
SELECT t.oid, t.tgrelid, t.tgname, quote_ident(t.tgname),
       pg_get_triggerdef(t.oid, false), t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {USER_NS}
"""

POLICIES = f"""
SELECT p.oid, p.polrelid, p.polname, quote_ident(p.polname), p.polcmd::text,
       p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
             FROM unnest(p.polroles) r ORDER BY 1),
       coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
       coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_NS}
"""

COMMENTS = """
SELECT classoid, objoid, objsubid, description FROM pg_description
WHERE objoid >= 16384
"""

# Rewrite rules of views (their dependencies are the view's), array and row types.
RULES = "SELECT oid, ev_class FROM pg_rewrite WHERE ev_class >= 16384"
ARRAY_TYPES = "SELECT oid, typelem FROM pg_type WHERE typelem <> 0 AND oid >= 16384"

DEPENDS = """
SELECT classid, objid, objsubid, refclassid, refobjid, refobjsubid,
       deptype::text
FROM pg_depend WHERE objid >= 16384 AND refobjid >= 16384 AND deptype IN ('n', 'a', 'i')
"""
