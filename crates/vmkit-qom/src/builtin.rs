//! The built-in types every process has: the roots, containers, the device
//! and machine bases, and the `singleton` and `user-creatable` interfaces.

use std::sync::Arc;

use crate::property::{PropertyDef, PropertyKind};
use crate::type_info::{
    Registry, TYPE_CONTAINER, TYPE_DEVICE, TYPE_INTERFACE, TYPE_MACHINE, TYPE_OBJECT, TYPE_SINGLETON,
    TYPE_USER_CREATABLE, TypeInfo,
};
use crate::value::Value;

pub(crate) fn register_builtin_types(r: &Registry) {
    let types = [
        TypeInfo::new(TYPE_OBJECT)
            .abstract_type(true)
            .description("the root of all types")
            .class_property(
                PropertyDef::new("type", PropertyKind::Str)
                    .description("the object's type name")
                    .accessors(Some(Arc::new(|o| Ok(Value::str(o.type_name())))), None),
            ),
        TypeInfo {
            name: TYPE_INTERFACE.into(),
            is_abstract: true,
            is_interface: true,
            ..Default::default()
        },
        TypeInfo::interface(TYPE_SINGLETON).description("at most one instance may be realized or completed at a time"),
        TypeInfo::interface(TYPE_USER_CREATABLE)
            .description("creatable with object-add; completed after its properties are set"),
        TypeInfo::new(TYPE_CONTAINER).description("an object that only holds children"),
        TypeInfo::new(TYPE_DEVICE)
            .abstract_type(true)
            .description("the base of devices: realize / unrealize")
            .class_property(
                PropertyDef::new("realized", PropertyKind::Bool)
                    .description("whether the device is realized")
                    .accessors(
                        Some(Arc::new(|o| Ok(Value::Bool(o.is_realized())))),
                        Some(Arc::new(|o, v| {
                            if v == Value::Bool(true) {
                                o.realize()
                            } else {
                                o.unrealize()
                            }
                        })),
                    ),
            )
            .class_property(
                PropertyDef::new("hotpluggable", PropertyKind::Bool)
                    .description("whether the device can be plugged at run time")
                    .accessors(Some(Arc::new(|_| Ok(Value::Bool(true)))), None),
            )
            .class_property(
                PropertyDef::new("hotplugged", PropertyKind::Bool)
                    .description("whether the device was plugged at run time")
                    .accessors(Some(Arc::new(|o| Ok(Value::Bool(o.is_hotplugged())))), None),
            ),
        TypeInfo::new(TYPE_MACHINE)
            .abstract_type(true)
            .description("the base of machines")
            .instance_init(|m| {
                for name in ["peripheral", "peripheral-anon", "unattached"] {
                    let c = crate::Object::new(TYPE_CONTAINER)?;
                    m.add_child(name, &c)?;
                }
                Ok(())
            }),
        TypeInfo::new("none-machine")
            .parent(TYPE_MACHINE)
            .description("an empty machine"),
    ];
    for info in types {
        let name = info.name.clone();
        if let Err(e) = r.register(info) {
            // Only a programming error in this file can get here.
            panic!("vmkit-qom: built-in type '{name}' failed to register: {e}");
        }
    }
}
