//! `ObjectRef`, the owned QOM reference, and `Object::try_ref`.
//!
//! This is the crate's only module with `unsafe` code. All `ObjectRef`s of
//! an object share the single `Arc` strong count the object was created
//! with: taking or dropping a reference is then one atomic operation on the
//! QOM count ([`RefCount`](crate::RefCount)) instead of two (QOM count and
//! `Arc` count). The invariant:
//!
//! * every `ObjectRef` stands for exactly one unit of `ObjectInner::refs`;
//! * while `refs > 0`, one `Arc` strong count is held on their behalf;
//! * the `ObjectRef` whose drop takes `refs` from one to zero gives that
//!   strong count back, after finalization; no reference can be made after
//!   that, because `try_ref` refuses a zero count and `clone` needs an
//!   existing reference.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;

use crate::error::Result;
use crate::object::Object;

/// An owned QOM reference to an object; dropping it is `unref`.
///
/// Cloning takes another reference: that cannot fail, because holding one
/// proves the object is live.
//
// The QOM references of an object together own exactly one strong count of
// its `Arc`: the one it was created with, given back by the reference that
// drops the QOM count to zero. Every other reference is a bitwise copy of
// that `Arc` that owns nothing, so taking or dropping a reference costs one
// atomic operation (on the QOM count) instead of two.
pub struct ObjectRef(ManuallyDrop<Object>);

impl Deref for ObjectRef {
    type Target = Object;
    #[inline]
    fn deref(&self) -> &Object {
        &self.0
    }
}

impl Clone for ObjectRef {
    #[inline]
    fn clone(&self) -> Self {
        self.0.0.refs.acquire();
        // SAFETY: `self` is a counted reference, so the count was above zero
        // and the shared strong count exists; it was just raised for the copy.
        unsafe { ObjectRef::counted(&self.0) }
    }
}

impl Drop for ObjectRef {
    #[inline]
    fn drop(&mut self) {
        if self.0.0.refs.release() {
            // SAFETY: the count went from one to zero, so this was the last
            // reference and no other can ever be made (`try_ref` refuses a
            // zero count): the shared strong count is this one's to give back,
            // and `self.0` is not used again.
            let owned = unsafe { ManuallyDrop::take(&mut self.0) };
            crate::lifecycle::finalize(&owned);
            drop(owned);
        }
    }
}

impl ObjectRef {
    /// The one reference of a freshly allocated object: `handle`'s strong
    /// count becomes the one all references share.
    pub(crate) fn adopt(handle: Object) -> ObjectRef {
        ObjectRef(ManuallyDrop::new(handle))
    }

    /// A reference that was just counted on `handle`'s object.
    ///
    /// # Safety
    ///
    /// The caller raised the object's QOM count, for the returned reference,
    /// from a value above zero (so the shared strong count is held and stays
    /// held while the returned reference exists).
    unsafe fn counted(handle: &Object) -> ObjectRef {
        // SAFETY: a bitwise copy of the `Arc` that takes no strong count of its
        // own. It is never dropped as such: `Drop for ObjectRef` drops the
        // `Arc` only for the last reference, giving back the shared count the
        // caller guarantees exists, and the allocation lives at least as long.
        ObjectRef(ManuallyDrop::new(unsafe { std::ptr::read(handle) }))
    }

    /// The handle (without the reference).
    pub fn handle(&self) -> Object {
        Object::clone(&self.0)
    }
}

impl Object {
    /// Takes a reference (QOM's `object_ref`).
    ///
    /// Refused with [`Error::ObjectFinalized`] when the object is finalizing or
    /// finalized: the count is checked and incremented in one atomic step, so
    /// an object whose count reached zero can never be brought back.
    #[inline]
    pub fn try_ref(&self) -> Result<ObjectRef> {
        match self.0.refs.try_acquire() {
            // SAFETY: the count was raised from a value above zero for the new reference.
            Ok(()) => Ok(unsafe { ObjectRef::counted(self) }),
            Err(seen) => Err(self.try_ref_refused(seen)),
        }
    }
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({:?})", *self.0)
    }
}
