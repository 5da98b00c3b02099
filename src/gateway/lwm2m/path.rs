//! LwM2M paths (`/oid/iid/rid/riid`, TS Core §6.1): an object, an object instance, a
//! resource or a resource instance. A [`LwPath`] is always one of these four shapes and its
//! ids are never the reserved 65535, so code holding one need not check either again.

use std::fmt;
use std::str::FromStr;

/// The highest id of an object, instance, resource or resource instance: 65535 is
/// reserved (TS Core §6.1: "MAX_ID").
pub const MAX_ID: u16 = 65534;

/// An LwM2M path: the object id, then as many deeper ids as the path names.
///
/// The fields are private so that a deeper id exists only with the shallower ones;
/// the derived order is the path's tree order (`/3` < `/3/0` < `/3/0/1` < `/3/1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LwPath {
    oid: u16,
    iid: Option<u16>,
    rid: Option<u16>,
    riid: Option<u16>,
}

/// Why ids or a text do not make an [`LwPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("id 65535 is reserved")]
    Reserved,
    #[error("{0} is a resource instance: it has no children")]
    TooDeep(LwPath),
    #[error("{text:?} is not an LwM2M path: {reason}")]
    Syntax { text: String, reason: &'static str },
}

impl LwPath {
    /// `/oid`.
    pub fn object(oid: u16) -> Result<LwPath, PathError> {
        Ok(LwPath {
            oid: checked(oid)?,
            iid: None,
            rid: None,
            riid: None,
        })
    }

    /// `/oid/iid`.
    pub fn instance(oid: u16, iid: u16) -> Result<LwPath, PathError> {
        LwPath::object(oid)?.child(iid)
    }

    /// `/oid/iid/rid`.
    pub fn resource(oid: u16, iid: u16, rid: u16) -> Result<LwPath, PathError> {
        LwPath::instance(oid, iid)?.child(rid)
    }

    /// `/oid/iid/rid/riid`.
    pub fn resource_instance(oid: u16, iid: u16, rid: u16, riid: u16) -> Result<LwPath, PathError> {
        LwPath::resource(oid, iid, rid)?.child(riid)
    }

    /// The path one level deeper, ending in `id`.
    pub fn child(&self, id: u16) -> Result<LwPath, PathError> {
        let id = Some(checked(id)?);
        let mut child = *self;
        match (self.iid, self.rid, self.riid) {
            (None, _, _) => child.iid = id,
            (Some(_), None, _) => child.rid = id,
            (Some(_), Some(_), None) => child.riid = id,
            (Some(_), Some(_), Some(_)) => return Err(PathError::TooDeep(*self)),
        }
        Ok(child)
    }

    pub fn oid(&self) -> u16 {
        self.oid
    }

    pub fn iid(&self) -> Option<u16> {
        self.iid
    }

    pub fn rid(&self) -> Option<u16> {
        self.rid
    }

    pub fn riid(&self) -> Option<u16> {
        self.riid
    }

    /// The path one level up; `None` for an object.
    pub fn parent(&self) -> Option<LwPath> {
        let mut parent = *self;
        if parent.riid.take().is_some()
            || parent.rid.take().is_some()
            || parent.iid.take().is_some()
        {
            Some(parent)
        } else {
            None
        }
    }

    /// The object instance (`/oid/iid`) this path is or lies in; `None` for an object.
    pub fn object_instance(&self) -> Option<LwPath> {
        self.iid.map(|iid| LwPath {
            oid: self.oid,
            iid: Some(iid),
            rid: None,
            riid: None,
        })
    }

    /// Whether `other` is this path or lies below it.
    pub fn contains(&self, other: &LwPath) -> bool {
        let within = |mine: Option<u16>, theirs: Option<u16>| mine.is_none() || mine == theirs;
        self.oid == other.oid
            && within(self.iid, other.iid)
            && within(self.rid, other.rid)
            && within(self.riid, other.riid)
    }

    /// The ids the path names, object first (one to four).
    pub fn ids(&self) -> impl Iterator<Item = u16> + use<> {
        [Some(self.oid), self.iid, self.rid, self.riid]
            .into_iter()
            .map_while(|id| id)
    }
}

fn checked(id: u16) -> Result<u16, PathError> {
    if id > MAX_ID {
        return Err(PathError::Reserved);
    }
    Ok(id)
}

impl fmt::Display for LwPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl FromStr for LwPath {
    type Err = PathError;

    /// Reads `/oid`, `/oid/iid`, `/oid/iid/rid` or `/oid/iid/rid/riid`: decimal ids
    /// without sign or leading zeros (one spelling per path), no trailing `/`.
    fn from_str(text: &str) -> Result<LwPath, PathError> {
        let syntax = |reason| PathError::Syntax {
            text: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| syntax("it must start with '/'"))?;
        let mut segments = rest.split('/');
        let mut path = LwPath::object(id(segments.next().unwrap_or_default()).map_err(syntax)?)?;
        for segment in segments {
            if path.riid.is_some() {
                return Err(syntax("more than four ids"));
            }
            path = path.child(id(segment).map_err(syntax)?)?;
        }
        Ok(path)
    }
}

/// One decimal id of a path.
fn id(segment: &str) -> Result<u16, &'static str> {
    if segment.is_empty() {
        return Err("an id is empty");
    }
    if !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err("an id is not a decimal number");
    }
    if segment.len() > 1 && segment.starts_with('0') {
        return Err("an id has a leading zero");
    }
    segment.parse().map_err(|_| "an id is above 65535")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> LwPath {
        text.parse().unwrap()
    }

    #[test]
    fn the_four_shapes_print_and_parse_back() {
        for (path, text) in [
            (LwPath::object(3).unwrap(), "/3"),
            (LwPath::instance(3, 0).unwrap(), "/3/0"),
            (LwPath::resource(3303, 0, 5700).unwrap(), "/3303/0/5700"),
            (LwPath::resource_instance(3, 0, 6, 1).unwrap(), "/3/0/6/1"),
            (
                LwPath::resource_instance(MAX_ID, MAX_ID, MAX_ID, MAX_ID).unwrap(),
                "/65534/65534/65534/65534",
            ),
        ] {
            assert_eq!(path.to_string(), text);
            assert_eq!(p(text), path);
        }
    }

    #[test]
    fn ids_and_levels() {
        let path = p("/3/0/6/1");
        assert_eq!(
            (path.oid(), path.iid(), path.rid(), path.riid()),
            (3, Some(0), Some(6), Some(1))
        );
        assert_eq!(path.ids().collect::<Vec<_>>(), [3, 0, 6, 1]);
        assert_eq!(path.parent(), Some(p("/3/0/6")));
        assert_eq!(p("/3/0").parent(), Some(p("/3")));
        assert_eq!(p("/3").parent(), None);
        assert_eq!(path.object_instance(), Some(p("/3/0")));
        assert_eq!(p("/3/0").object_instance(), Some(p("/3/0")));
        assert_eq!(p("/3").object_instance(), None);
        assert_eq!(p("/3/0").child(5700), Ok(p("/3/0/5700")));
        assert_eq!(path.child(0), Err(PathError::TooDeep(path)));
        assert_eq!(p("/3").child(65535), Err(PathError::Reserved));
        assert_eq!(LwPath::object(65535), Err(PathError::Reserved));
        assert_eq!(LwPath::resource(3, 0, 65535), Err(PathError::Reserved));
    }

    #[test]
    fn containment_and_order() {
        assert!(p("/3").contains(&p("/3/0/6/1")));
        assert!(p("/3/0").contains(&p("/3/0")));
        assert!(!p("/3/0").contains(&p("/3/1/0")));
        assert!(!p("/3/0/5").contains(&p("/3/0")));
        assert!(!p("/3").contains(&p("/33")));
        let mut paths = vec![p("/3/1"), p("/3/0/1"), p("/3/0"), p("/3")];
        paths.sort();
        assert_eq!(paths, [p("/3"), p("/3/0"), p("/3/0/1"), p("/3/1")]);
    }

    #[test]
    fn malformed_texts_are_refused() {
        for text in [
            "",
            "/",
            "3/0",
            "/3/",
            "//3",
            "/3//0",
            "/-1",
            "/+3",
            "/03",
            "/3/0x1",
            "/3/0/1/2/3",
            "/65536",
            "/3/ 0",
            "/٣",
        ] {
            assert!(
                matches!(text.parse::<LwPath>(), Err(PathError::Syntax { .. })),
                "{text:?}"
            );
        }
        assert_eq!("/65535".parse::<LwPath>(), Err(PathError::Reserved));
        assert_eq!("/3/0/65535".parse::<LwPath>(), Err(PathError::Reserved));
        assert_eq!(p("/0/0"), LwPath::instance(0, 0).unwrap());
    }
}
