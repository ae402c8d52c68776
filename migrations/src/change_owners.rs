use sea_orm_migration::prelude::*;

/// Each logged change keeps its owner (an order's customer), so a replay
/// for one owner reads that owner's changes through an index instead of
/// every change of the topic. Rows logged before have none; readers take
/// those as possibly anyone's.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::add_indexed_column(
            manager,
            "changes",
            ColumnDef::new(Alias::new("owner")).string().null(),
            "changes_topic_owner",
            &["topic", "owner", "position"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::drop_indexed_column(manager, "changes", "owner", "changes_topic_owner")
            .await
    }
}
