"""SQL of the personal profile shown by QID_IM_GET_USER_INFO."""

PUBLIC_FIELDS = ("uname", "name", "deptid", "position", "telephone", "cellphone", "email",
                 "avatar", "sign")
PRIVATE_FIELDS = ("sex", "age", "birthday", "address", "zipcode")


def get_info(cur, viewer: str, uname: str) -> tuple[dict, bool] | None:
    """(every profile field of uname, whether viewer is uname or one of uname's friends);
    None if there is no such user."""
    cur.execute("""SELECT u.uid AS uname, u.name, u.deptid, u.position, u.telephone, u.cellphone,
                          u.email, r.avatar, r.sign, u.sex, u.age, u.birthday, u.address,
                          u.zipcode,
                          u.uid = %(viewer)s OR EXISTS (
                              SELECT 1 FROM tp_im_roster_frd f
                              WHERE f.userid = u.uid AND f.fid = %(viewer)s) AS close
                   FROM im_user u LEFT JOIN tp_im_roster r ON r.userid = u.uid
                   WHERE u.uid = %(uname)s""", {"viewer": viewer, "uname": uname})
    row = cur.fetchone()
    if row is None:
        return None
    info = dict(zip([d[0] for d in cur.description], row))
    return info, bool(info.pop("close"))
