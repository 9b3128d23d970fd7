-- im schema, version 1. Idempotent: applied by `im initdb` and at every server start.
-- Tables 1-8 keep the design document's names (000_09fc0c4b1f07b54c.txt §1), lower case.
-- Later versions append upgrade steps in im/schema.py; schema_version records the level.

CREATE TABLE IF NOT EXISTS schema_version (
    id      smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version integer NOT NULL
);

-- Accounts (not in the design document): identity, password hash, directory fields.
CREATE TABLE IF NOT EXISTS im_user (
    uid        varchar(50) PRIMARY KEY,
    pwd_hash   text NOT NULL,
    name       varchar(50) NOT NULL DEFAULT '',
    deptid     varchar(50) NOT NULL DEFAULT '',
    sex        varchar(1) NOT NULL DEFAULT '',
    age        smallint,
    birthday   date,
    telephone  varchar(30) NOT NULL DEFAULT '',
    cellphone  varchar(30) NOT NULL DEFAULT '',
    email      varchar(100) NOT NULL DEFAULT '',
    address    varchar(200) NOT NULL DEFAULT '',
    zipcode    varchar(10) NOT NULL DEFAULT '',
    position   varchar(100) NOT NULL DEFAULT '',
    disabled   boolean NOT NULL DEFAULT false,
    ver        bigint NOT NULL DEFAULT 0,          -- contacts version stamp of this row
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_im_user_ver ON im_user (ver);

CREATE TABLE IF NOT EXISTS im_dept (
    deptid  varchar(50) PRIMARY KEY,
    pid     varchar(50) NOT NULL DEFAULT '0',
    name    varchar(100) NOT NULL,
    ord     integer NOT NULL DEFAULT 0
);

-- Version counters: 'dept' (department tree) and 'contacts' (directory).
CREATE TABLE IF NOT EXISTS im_version (
    name varchar(20) PRIMARY KEY,
    ver  bigint NOT NULL DEFAULT 0
);
INSERT INTO im_version (name, ver) VALUES ('dept', 0), ('contacts', 0) ON CONFLICT DO NOTHING;

-- Session tokens, stored as SHA-256 of the 256-bit random token.
CREATE TABLE IF NOT EXISTS im_token (
    token_hash bytea PRIMARY KEY,
    uid        varchar(50) NOT NULL REFERENCES im_user (uid) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked    boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS idx_im_token_uid ON im_token (uid);

-- Failed password logins, for the per (uid, address) and per address limits (§1.5).
CREATE TABLE IF NOT EXISTS im_login_failure (
    addr varchar(64) NOT NULL,
    uid  varchar(50) NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_im_login_failure_addr ON im_login_failure (addr, at);

-- Mailbox stream of each user (§1.3): last position taken, highest position given out.
CREATE TABLE IF NOT EXISTS im_mailbox (
    uid       varchar(50) PRIMARY KEY,
    last_seq  bigint NOT NULL DEFAULT 0,
    given_seq bigint NOT NULL DEFAULT 0
);
-- Every 1:1 message to uid up to received_seq is RECEIVED (a lower bound, raised by marks
-- `upto`/`seq`; no row = 0). The unreceived fetch starts after it instead of using a partial
-- index on `received`, which would make every receipt a non-HOT update of all the message's
-- indexes. Its own table, so that receipts never wait for the chat writer's mailbox locks.
CREATE TABLE IF NOT EXISTS im_received (
    uid          varchar(50) PRIMARY KEY,
    received_seq bigint NOT NULL
);

-- 1.1 user roster header
CREATE TABLE IF NOT EXISTS tp_im_roster (
    userid      varchar(50) PRIMARY KEY,
    grp         varchar(4000) NOT NULL DEFAULT '[{"gid":"1","n":"我的好友","w":0,"def":true}]',
    sign        varchar(500) NOT NULL DEFAULT '',
    avatar      varchar(500) NOT NULL DEFAULT '',
    update_time timestamptz NOT NULL DEFAULT now()
);

-- 1.2 friends, one row per direction
CREATE TABLE IF NOT EXISTS tp_im_roster_frd (
    userid      varchar(50) NOT NULL,
    fid         varchar(50) NOT NULL,
    gid         varchar(50),
    fname       varchar(50),
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (userid, fid)
);

-- 1.3 friend requests, identified by (msgfrom, msgid)
CREATE TABLE IF NOT EXISTS tp_im_roster_req (
    msgid     varchar(50) NOT NULL,
    msg       varchar(500),
    state     smallint NOT NULL DEFAULT 0,
    msgfrom   varchar(50) NOT NULL,
    msgto     varchar(50) NOT NULL,
    send_time timestamptz NOT NULL DEFAULT now(),
    received  smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (msgfrom, msgid)
);
CREATE INDEX IF NOT EXISTS idx_tp_im_roster_req_msgto ON tp_im_roster_req (msgto, state);

-- 1.4 one-to-one messages, identified by (msgfrom, msgid); from_seq/to_seq are mailbox positions
CREATE TABLE IF NOT EXISTS tp_im_message (
    msgid     varchar(50) NOT NULL,
    msg       text,
    msgfrom   varchar(50) NOT NULL,
    msgto     varchar(50) NOT NULL,
    send_time varchar(30),
    received  smallint NOT NULL DEFAULT 0,
    indb_time timestamptz NOT NULL DEFAULT now(),
    from_res  varchar(100) NOT NULL DEFAULT '',
    to_res    varchar(100) NOT NULL DEFAULT '',
    from_seq  bigint NOT NULL,
    to_seq    bigint NOT NULL,
    PRIMARY KEY (msgfrom, msgid)
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_tp_im_message_msgto_seq ON tp_im_message (msgto, to_seq);
CREATE INDEX IF NOT EXISTS idx_tp_im_message_msgfrom_seq ON tp_im_message (msgfrom, from_seq);
-- No index mentions `received`, and pages keep room, so a receipt is a HOT update (no index
-- entry written); unreceived messages are found after im_received.received_seq.
DROP INDEX IF EXISTS idx_tp_im_message_unreceived;
DROP INDEX IF EXISTS idx_tp_im_message_msgto_msgid;
ALTER TABLE tp_im_message SET (fillfactor = 80);
-- receipts by msgid without `from` (the design document's receipt form) must not scan a mailbox
CREATE INDEX IF NOT EXISTS idx_tp_im_message_to_msgid ON tp_im_message (msgto, msgid);
-- conversation history between two users (QID_IM_GET_ROSTER_MSG_HISTORY), one per direction
CREATE INDEX IF NOT EXISTS idx_tp_im_message_pair_to ON tp_im_message (msgto, msgfrom, to_seq);
CREATE INDEX IF NOT EXISTS idx_tp_im_message_pair_from ON tp_im_message (msgfrom, msgto, from_seq);

-- 1.6 groups; last_seq is the group's stream counter
CREATE TABLE IF NOT EXISTS tp_im_group (
    gid        varchar(50) PRIMARY KEY,
    gname      varchar(500),
    userid     varchar(50) NOT NULL,
    createtime timestamptz NOT NULL DEFAULT now(),
    type       varchar(50) NOT NULL DEFAULT '1',
    exit       varchar(30) NOT NULL DEFAULT '1',
    indb_time  timestamptz NOT NULL DEFAULT now(),
    last_seq   bigint NOT NULL DEFAULT 0,
    dismissed  boolean NOT NULL DEFAULT false
);
CREATE SEQUENCE IF NOT EXISTS tp_im_group_gid_seq;

-- 1.5 group messages, identified by (msgfrom, msgid); seq is the group's stream position
CREATE TABLE IF NOT EXISTS tp_im_message_group (
    msgid     varchar(50) NOT NULL,
    msg       text,
    msgfrom   varchar(50) NOT NULL,
    gid       varchar(50) NOT NULL REFERENCES tp_im_group (gid) ON DELETE CASCADE,
    send_time varchar(30),
    indb_time timestamptz NOT NULL DEFAULT now(),
    from_res  varchar(100) NOT NULL DEFAULT '',
    seq       bigint NOT NULL,
    PRIMARY KEY (msgfrom, msgid)
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_tp_im_message_group_gid_seq ON tp_im_message_group (gid, seq);

-- 1.7 group members; sync_seq = the member's group sync point, join_seq = last seq at join
CREATE SEQUENCE IF NOT EXISTS tp_im_group_peer_join_order;
CREATE TABLE IF NOT EXISTS tp_im_group_peer (
    gid        varchar(50) NOT NULL REFERENCES tp_im_group (gid) ON DELETE CASCADE,
    userid     varchar(50) NOT NULL,
    fname      varchar(200),
    "right"    varchar(2) NOT NULL DEFAULT '0',
    join_time  timestamptz NOT NULL DEFAULT now(),
    join_order bigint NOT NULL DEFAULT nextval('tp_im_group_peer_join_order'),
    join_seq   bigint NOT NULL DEFAULT 0,
    sync_seq   bigint NOT NULL DEFAULT 0,
    given_seq  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (gid, userid)
);
CREATE INDEX IF NOT EXISTS idx_tp_im_group_peer_userid ON tp_im_group_peer (userid);
CREATE INDEX IF NOT EXISTS idx_tp_im_group_peer_order ON tp_im_group_peer (gid, join_order);

-- 1.8 group invitations, identified by (msgfrom, msgid)
CREATE TABLE IF NOT EXISTS tp_im_group_req (
    msgid     varchar(50) NOT NULL,
    state     smallint NOT NULL DEFAULT 0,
    msgfrom   varchar(50) NOT NULL,
    msgto     varchar(50) NOT NULL,
    gid       varchar(50) NOT NULL,
    gname     varchar(500),
    send_time timestamptz NOT NULL DEFAULT now(),
    received  smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (msgfrom, msgid)
);
CREATE INDEX IF NOT EXISTS idx_tp_im_group_req_msgto ON tp_im_group_req (msgto, state);

-- The chat writer's batch (im/store/chat.py `store_batch`) in one statement, so in one round
-- trip and one transaction. The caller numbered the messages within the batch (offsets from
-- each counter's current value); this locks the counters in sorted order (writers cannot
-- deadlock), advances them, inserts the messages at base + offset and raises the given
-- positions (§6.12). Returns each counter's value before: ('m', uid, base), ('g', gid, base);
-- a group that does not exist (any more) is not returned and its messages are not stored.
-- A (msgfrom, msgid) stored already fails the insert: the caller looks them up and retries.
CREATE OR REPLACE FUNCTION im_chat_store(
    stamp timestamptz, uids text[], uid_count bigint[], uid_given bigint[],
    d_msgid text[], d_msg text[], d_from text[], d_to text[], d_send_time text[],
    d_from_res text[], d_to_res text[], d_from_off bigint[], d_to_off bigint[],
    gids text[], gid_count bigint[], online_gid text[], online_uid text[],
    g_msgid text[], g_msg text[], g_from text[], g_gid text[], g_send_time text[],
    g_from_res text[], g_off bigint[])
RETURNS TABLE (out_kind text, out_key text, out_base bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    locked bigint;
BEGIN
    IF cardinality(uids) > 0 THEN
        PERFORM FROM im_mailbox WHERE uid = ANY(uids) ORDER BY uid FOR UPDATE;
        GET DIAGNOSTICS locked = ROW_COUNT;
        IF locked < cardinality(uids) THEN  -- e.g. the `system` sender, which has no account
            INSERT INTO im_mailbox (uid) SELECT unnest(uids) ON CONFLICT DO NOTHING;
            PERFORM FROM im_mailbox WHERE uid = ANY(uids) ORDER BY uid FOR UPDATE;
        END IF;
        RETURN QUERY
        WITH mb AS (UPDATE im_mailbox b SET last_seq = b.last_seq + v.n,
                          given_seq = GREATEST(b.given_seq, b.last_seq + NULLIF(v.given, 0))
                   FROM unnest(uids, uid_count, uid_given) AS v(uid, n, given)
                   WHERE b.uid = v.uid
                   RETURNING b.uid, b.last_seq - v.n AS base),
             ins AS (INSERT INTO tp_im_message (msgid, msg, msgfrom, msgto, send_time, from_res,
                                                to_res, from_seq, to_seq, indb_time)
                     SELECT m.msgid, m.msg, m.msgfrom, m.msgto, m.send_time, m.from_res,
                            m.to_res, f.base + m.from_off, t.base + m.to_off, stamp
                     FROM unnest(d_msgid, d_msg, d_from, d_to, d_send_time, d_from_res,
                                 d_to_res, d_from_off, d_to_off)
                          AS m(msgid, msg, msgfrom, msgto, send_time, from_res, to_res,
                               from_off, to_off)
                     JOIN mb f ON f.uid = m.msgfrom JOIN mb t ON t.uid = m.msgto)
        SELECT 'm', uid::text, base FROM mb;
    END IF;
    IF cardinality(gids) > 0 THEN
        PERFORM FROM tp_im_group WHERE gid = ANY(gids) AND NOT dismissed ORDER BY gid FOR UPDATE;
        RETURN QUERY
        WITH gr AS (UPDATE tp_im_group g SET last_seq = g.last_seq + v.n
                   FROM unnest(gids, gid_count) AS v(gid, n)
                   WHERE g.gid = v.gid AND NOT g.dismissed
                   RETURNING g.gid, g.last_seq, g.last_seq - v.n AS base),
             ins AS (INSERT INTO tp_im_message_group (msgid, msg, msgfrom, gid, send_time,
                                                      from_res, seq, indb_time)
                     SELECT m.msgid, m.msg, m.msgfrom, m.gid, m.send_time, m.from_res,
                            gr.base + m.off, stamp
                     FROM unnest(g_msgid, g_msg, g_from, g_gid, g_send_time, g_from_res, g_off)
                          AS m(msgid, msg, msgfrom, gid, send_time, from_res, off)
                     JOIN gr ON gr.gid = m.gid),
             -- the members online now are given the group's new last position (§6.12)
             given AS (UPDATE tp_im_group_peer p SET given_seq = gr.last_seq
                       FROM unnest(online_gid, online_uid) AS o(gid, uid) JOIN gr USING (gid)
                       WHERE p.gid = o.gid AND p.userid = o.uid AND p.given_seq < gr.last_seq)
        SELECT 'g', gid::text, base FROM gr;
    END IF;
END $$;

-- Uploaded files (PROTOCOL.md §3): the first uploader owns a name; `size` counts the bytes
-- written and fsynced under <files_dir>/partial, `complete` once moved to <files_dir>/complete.
CREATE TABLE IF NOT EXISTS im_file (
    name       varchar(128) PRIMARY KEY,
    owner      varchar(50) NOT NULL,
    filesize   bigint NOT NULL,
    size       bigint NOT NULL DEFAULT 0,
    complete   boolean NOT NULL DEFAULT false,
    md5        varchar(32),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- of `size`, the bytes fsynced (NULL: all of them) and the machine boot the rest was written in
ALTER TABLE im_file ADD COLUMN IF NOT EXISTS durable bigint;
ALTER TABLE im_file ADD COLUMN IF NOT EXISTS boot varchar(36);

INSERT INTO schema_version (id, version) VALUES (1, 1) ON CONFLICT DO NOTHING;
