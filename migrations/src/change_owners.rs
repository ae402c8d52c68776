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
        crate::columns::add_column(
            manager,
            "changes",
            ColumnDef::new(Alias::new("owner")).string().null(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("changes_topic_owner")
                    .table(Alias::new("changes"))
                    .col(Alias::new("topic"))
                    .col(Alias::new("owner"))
                    .col(Alias::new("position"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("changes_topic_owner")
                    .table(Alias::new("changes"))
                    .to_owned(),
            )
            .await?;
        crate::columns::drop_column(manager, "changes", "owner").await
    }
}
